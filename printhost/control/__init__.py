"""Everything that runs inside the control process.

Nothing here imports the web framework or the store: the control process must keep
running its loops whatever the API is doing.
"""
