"""Lets nbgrader's commands and its JupyterLab extension find the course configuration from here."""

c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)
load_subconfig("autograder/nbgrader_config.py")  # noqa: F821
