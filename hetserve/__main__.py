from hetserve.cli import entrypoint

entrypoint()
