#!/usr/bin/env python
"""manage.py of the test project: the lab app holds migrations that exercise the engine."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
