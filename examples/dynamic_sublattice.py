# %% [markdown]
# # A sublattice whose shape depends on data
#
# While a lattice is built, electron outputs are placeholders: their values do not exist
# yet, so `len(x)`, `if x:` or `for item in x` on them raise `WorkflowDefinitionError`. To
# fan out over a number of items only known at run time, make that part a *sublattice*
# (`ct.electron(ct.lattice(f))`): it is built on a worker once its inputs have values, and
# runs as a dispatch of its own.

# %%
import covalent as ct


@ct.electron
def find_batches(text):
    """Upstream work whose output decides the shape of what follows."""
    return [line.split() for line in text.strip().splitlines()]


@ct.electron
def count_words(batch):
    return len(batch)


@ct.electron
@ct.lattice
def count_each(batches):
    # Runs on a worker: `batches` is a real list here, so a loop over it is fine.
    return [count_words(b) for b in batches]


@ct.electron
def total(counts):
    return sum(counts)


@ct.lattice
def pipeline(text):
    batches = find_batches(text)
    counts = count_each(batches)
    return {"counts": counts, "total": total(counts)}


# %%
text = """
the quick brown fox
jumps over
the lazy dog
again and again and again
"""
result = ct.dispatch_sync(pipeline)(text)
print(result.status)
print("counts:", result.result["counts"], "total:", result.result["total"])

# %% [markdown]
# The sublattice node's record links to its own dispatch, whose nodes are the electrons it
# built: one per batch.

# %%
node = next(n for n in result.get_all_node_results() if n["node_name"].startswith(":sublattice:"))
child = node["sublattice_result"]
print("sublattice:", node["node_name"], "electrons:",
      sum(1 for n in child.get_all_node_results() if n["node_name"] == "count_words"))
child
