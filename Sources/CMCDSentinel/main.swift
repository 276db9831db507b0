import SentinelCLI

await SentinelCommand.runMain()
