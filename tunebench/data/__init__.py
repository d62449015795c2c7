"""The data half of the DAG: task files (tasks, taskkeys, taskdoc), fetch, label-transform and
format-instructions."""
