# %% [markdown]
# # Map-reduce over 10,000 items
#
# Every electron is a Dask task with a cost of its own (a millisecond or two: scheduling,
# recording its outcome), so 10,000 tiny electrons spend more time being tasks than
# computing. As with any Dask graph, map over *chunks*: here 20 electrons of 500 items each,
# then a reduction tree whose width is set by `fan_in`. The same workflow with `chunk=1`
# would be a 10,000-node dispatch: it works, it just takes longer.

# %%
import covalent as ct


@ct.electron
def word_lengths(words):
    """Map: a histogram of word lengths in one chunk."""
    counts = {}
    for w in words:
        counts[len(w)] = counts.get(len(w), 0) + 1
    return counts


@ct.electron
def merge(histograms):
    """Reduce: add histograms."""
    total = {}
    for h in histograms:
        for length, n in h.items():
            total[length] = total.get(length, 0) + n
    return total


@ct.lattice
def histogram(words, chunk=500, fan_in=4):
    parts = [word_lengths(words[i:i + chunk]) for i in range(0, len(words), chunk)]
    while len(parts) > 1:  # a tree: each level merges fan_in partial results
        parts = [merge(parts[i:i + fan_in]) for i in range(0, len(parts), fan_in)]
    return parts[0]


# %% [markdown]
# The items are the lattice's input: they travel in the dispatch request and each chunk
# reaches its electron as an argument.

# %%
words = [f"w{'x' * (i % 7)}{i}" for i in range(10_000)]
result = ct.dispatch_sync(histogram)(words)
print(result.status)
hist = dict(sorted(result.result.items()))
print("histogram:", hist)
print("items counted:", sum(hist.values()))
result
