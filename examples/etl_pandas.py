# %% [markdown]
# # An ETL pipeline with pandas and file transfers
#
# *Extract* daily sales files from a source location, *transform* them with pandas, and
# *load* a summary to a destination. The transfers run on the worker, around the electron:
# a `FileTransfer` before it brings the source file to a path the electron reads, and a
# `TransferToRemote` after it ships what the electron wrote. The function receives the
# `(from, to)` pairs as its `files` argument.
#
# Here both locations are local folders (the `Shutil` strategy); an `s3://`, `gs://` or
# `https://` URL picks the matching strategy with the same code.

# %%
import tempfile
from pathlib import Path

import pandas as pd

import covalent as ct

base = Path(tempfile.mkdtemp(prefix="etl-"))
source, warehouse = base / "source", base / "warehouse"
source.mkdir()
warehouse.mkdir()
for day, rows in {"2024-05-01": [("north", 120.0), ("south", 80.5), ("north", 30.0)],
                  "2024-05-02": [("south", 99.5), ("east", 42.0)]}.items():
    pd.DataFrame(rows, columns=["region", "amount"]).to_csv(source / f"{day}.csv", index=False)
days = sorted(p.stem for p in source.glob("*.csv"))
print("source files:", days)

# %%
def extract(day):
    """An electron that reads one day's file, copied to a temporary file first."""

    @ct.electron(files=[ct.fs.FileTransfer(str(source / f"{day}.csv"), None)])
    def read_day(files=[]):
        _, local_copy = files[0]
        frame = pd.read_csv(local_copy)
        frame["day"] = day
        return frame

    return read_day()


@ct.electron
def transform(frames):
    sales = pd.concat(frames, ignore_index=True)
    return sales.groupby("region", as_index=False)["amount"].sum().sort_values("region")


@ct.electron(files=[ct.fs.TransferToRemote(str(warehouse / "summary.csv"))])
def load(summary, files=[]):
    local_file, destination = files[0]
    summary.to_csv(local_file, index=False)  # shipped to `destination` after this returns
    return destination


@ct.lattice
def etl(days):
    frames = [extract(day) for day in days]
    summary = transform(frames)
    return {"summary": summary, "written_to": load(summary)}


# %%
result = ct.dispatch_sync(etl)(days)
print(result.status)
print(result.result["summary"].to_string(index=False))
print("written to:", result.result["written_to"])
print(Path(warehouse / "summary.csv").read_text())
