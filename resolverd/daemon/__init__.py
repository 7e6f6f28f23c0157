"""`resolverd serve`: publish snapshots in shared memory, swap them on reload, announce swaps.

Nothing here is imported by `import resolverd` or by the client: a trading process stays lean.
"""
