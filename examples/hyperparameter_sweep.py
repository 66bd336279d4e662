# %% [markdown]
# # A hyperparameter sweep with scikit-learn
#
# Each combination of hyperparameters is one electron, so the sweep runs in parallel on
# the Dask workers; one more electron picks the best. The data set (the digits that
# scikit-learn ships) is loaded once, in an electron, and passed to every fit by Dask.
#
# Run it with a dispatcher running (`covalent start`): `python examples/hyperparameter_sweep.py`.

# %%
import itertools

import covalent as ct


@ct.electron
def load_digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x / 16.0, y


@ct.electron
def score(data, c, gamma):
    """Mean accuracy of an RBF support-vector classifier over 3 folds."""
    from sklearn.model_selection import cross_val_score
    from sklearn.svm import SVC

    x, y = data
    scores = cross_val_score(SVC(C=c, gamma=gamma), x, y, cv=3)
    return {"C": c, "gamma": gamma, "accuracy": round(float(scores.mean()), 4)}


@ct.electron
def best(scores):
    return max(scores, key=lambda s: s["accuracy"])


@ct.lattice
def sweep(cs, gammas):
    data = load_digits()
    scores = [score(data, c, g) for c, g in itertools.product(cs, gammas)]
    return {"best": best(scores), "all": scores}


# %% [markdown]
# `ct.dispatch` sends the whole sweep in one request and returns its dispatch id at once.
# In a notebook, the id shows the dispatch's status and a link to its page in the web UI.

# %%
dispatch_id = ct.dispatch(sweep)([0.1, 1.0, 10.0], [0.01, 0.1])
dispatch_id

# %% [markdown]
# `get_result(wait=True, progress=True)` shows a bar per electron name while it waits.

# %%
result = ct.get_result(dispatch_id, wait=True, progress=True)
print(result.status)
for row in result.result["all"]:
    print(row)
print("best:", result.result["best"])
result
