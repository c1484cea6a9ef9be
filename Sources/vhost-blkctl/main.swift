/// Entry point: see `VhostBlkctl`.
VhostBlkctl.runFromCommandLine()
