"""What the tests share besides fixtures (those are in the conftest.py files, which hold
fixtures only and are imported by no one):

- :mod:`tests.helpers.jobs`: the repository root, running a job in-process on its composed
  config or a script as a user does, the options of a config group;
- :mod:`tests.helpers.training`: fitting a module quietly, a tiny backbone and a recipe;
- :mod:`tests.helpers.markers`: skip markers for what a machine may lack;
- :mod:`tests.helpers.formats`: writers of each dataset's real on-disk format;
- :mod:`tests.helpers.faults`: callbacks that inject faults (signals, NaN gradients, code in
  a pickle) into a job, added with ``+callbacks.<name>._target_=tests.helpers.faults...``;
- :mod:`tests.helpers.resume`: the stop-and-resume harness (a pretraining job in a fresh
  process, training states compared bit for bit);
- :mod:`tests.helpers.wandb_reader`: a reader of W&B offline run files.
"""
