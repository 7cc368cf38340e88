"""Code that runs inside the sandbox, before and around the program under test.

These modules use the standard library only and never import `pipelines`: the project
directory is hidden inside the sandbox. The parent binds this directory read-only into the
sandbox and runs `harness.py` as a script; the harness puts its own directory on sys.path
only while it imports its siblings.
"""
