"""The course's nbgrader set-up: configuration and the release of student notebooks."""
