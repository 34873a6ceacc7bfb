"""The course's instructor tools: the release of student notebooks, and the grader.

The grader runs each submission's cells in a sandbox and its test cells, read as check calls, in its own
process: the judge (``autograder.judge``, ``autograder.execute``) decides every score from values it
computed itself. See docs/grading.md.
"""
