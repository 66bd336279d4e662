# %% [markdown]
# # Working in a notebook
#
# What a notebook shows of a dispatch, and where its code may live:
#
# - electrons defined in the notebook itself, and in `helpers.py` next to it: both run on
#   the workers, which can import neither (the SDK sends them by value);
# - a dispatch id and a `Result` display as HTML tables with a link to the web UI;
# - `ct.get_result(..., wait=True, progress=True)` draws progress bars in the cell, updated
#   in place.

# %%
import covalent as ct
from helpers import keywords, normalise


@ct.electron
def count(words):
    return {w: len(w) for w in words}


@ct.electron
def longest(lengths):
    return max(lengths, key=lambda w: (lengths[w], w))


@ct.electron
def shout(word):
    return normalise(word).upper() + "!"


@ct.lattice
def analyse(texts):
    found = [keywords(t) for t in texts]
    lengths = [count(words) for words in found]
    return [shout(longest(x)) for x in lengths]


# %%
if hasattr(analyse, "draw"):  # the graph, drawn inline (where this version has it)
    analyse.draw(["one two", "three"])

# %%
dispatch_id = ct.dispatch(analyse)(["The art of computer programming",
                                    "A walk to the lighthouse", "Structure and interpretation"])
dispatch_id

# %%
result = ct.get_result(dispatch_id, wait=True, progress=True)

# %%
print(result.result)
result
