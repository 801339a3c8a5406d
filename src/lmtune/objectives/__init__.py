"""Training objectives beyond supervised answers, each on its TRL trainer (see ``config/objectives.py``).

* ``trainers`` — objective name -> a function that builds its TRL trainer from the run config;
* ``rewards``  — GRPO's reward functions (built-ins and ``module:function``);
* ``run``      — ``lmtune train`` for these objectives: the pipeline stages with their own measures.
"""
