# %% [markdown]
# # A pipeline started by files arriving in a directory
#
# A `DirTrigger` watches a directory from inside the dispatcher: every `batch_size` events it
# runs the lattice again, as a new dispatch, with the inputs it was stored with. Here the
# lattice processes whatever is in the inbox; each time two files are created, it runs.
# The trigger survives a restart of the dispatcher, and `ct.stop_triggers` stops it.

# %%
import tempfile
import time
from pathlib import Path

import covalent as ct
from covalent.triggers import DirTrigger

inbox = Path(tempfile.mkdtemp(prefix="inbox-"))


@ct.electron
def list_files(folder):
    return sorted(p.name for p in Path(folder).glob("*.txt"))


@ct.electron
def word_count(folder, names):
    return {name: len((Path(folder) / name).read_text().split()) for name in names}


@ct.lattice
def process_inbox(folder):
    names = list_files(folder)
    return word_count(folder, names)


# %% [markdown]
# Store the dispatch without running it (`disable_run=True`), then register the trigger on
# it: the dispatcher observes the directory from now on.

# %%
dispatch_id = ct.dispatch(process_inbox, disable_run=True)(str(inbox))
trigger = DirTrigger(str(inbox), ["created"], batch_size=2)
trigger.lattice_dispatch_id = dispatch_id
trigger.register()

# %% [markdown]
# Drop files in. The first fire starts the stored dispatch itself; later fires run it
# again as new dispatches, listed in `trigger.new_dispatch_ids`.

# %%
for name, text in [("a.txt", "one two"), ("b.txt", "three four five")]:
    (inbox / name).write_text(text)
first = ct.get_result(dispatch_id, wait=True)
print("first run:", first.status, first.result)

for name, text in [("c.txt", "six"), ("d.txt", "seven eight")]:
    (inbox / name).write_text(text)
deadline = time.monotonic() + 30
while not trigger.new_dispatch_ids and time.monotonic() < deadline:
    time.sleep(0.1)  # the trigger fires in the dispatcher; we can only ask what it did
second = ct.get_result(trigger.new_dispatch_ids[0], wait=True)
print("second run:", second.status, second.result)

# %%
ct.stop_triggers(dispatch_id)
print("stopped; runs started by the trigger:", len(trigger.new_dispatch_ids))
