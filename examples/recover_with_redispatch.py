# %% [markdown]
# # Recover from a failed node: redispatch with reuse
#
# A dispatch fails slowly: the failed node's descendants do not run, but every independent
# branch runs to its end and keeps its output. Fix the faulty electron and `redispatch`
# with `reuse_previous_results=True`: nodes whose function, inputs and parents did not
# change keep their old outputs (their start and end times are equal), and only the fixed
# node and what depends on it run again.

# %%
import time

import covalent as ct


@ct.electron
def expensive(i):
    time.sleep(0.2)  # stands for a long computation we do not want to run twice
    return i * i


@ct.electron
def parse(record):
    return int(record)  # fails on "n/a"


@ct.electron
def total(numbers):
    return sum(numbers)


@ct.lattice
def report(records):
    squares = [expensive(i) for i in range(4)]
    values = [parse(r) for r in records]
    return {"squares": total(squares), "values": total(values)}


# %%
records = ["1", "2", "n/a"]
failed = ct.dispatch_sync(report)(records)
print(failed.status)
print(failed.error)

# %% [markdown]
# Replace `parse` by a version that tolerates missing values and run again, reusing
# what already completed.

# %%
@ct.electron
def parse_or_zero(record):
    return int(record) if record.strip().isdigit() else 0


new_id = ct.redispatch(failed.dispatch_id, replace_electrons={"parse": parse_or_zero},
                       reuse_previous_results=True)()
fixed = ct.get_result(new_id, wait=True)
print(fixed.status, "result:", fixed.result)
reused = [n["node_name"] for n in fixed.get_all_node_results()
          if n["node_name"] == "expensive" and n["start_time"] == n["end_time"]]
print("reused nodes:", len(reused), reused)
fixed
