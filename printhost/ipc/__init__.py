"""The two links between the supervisor and the control process: a command channel and a status block."""
