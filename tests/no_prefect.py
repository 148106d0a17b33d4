"""Code for `python -c` that makes `import prefect` fail, as on the GPU image (no Prefect there).

Prefixed to a child process's program, so the parent test session (which has Prefect imported)
is not affected.
"""

BLOCK_PREFECT = (
    "import sys\n"
    "class _Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'prefect' or name.startswith('prefect.'):\n"
    "            raise ImportError('prefect is not installed here')\n"
    "sys.meta_path.insert(0, _Block())\n"
)
