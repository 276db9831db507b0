// sentinel-bench: figures, not tests. Run in release:
//   swift run -c release sentinel-bench [records] [sessions]          parse+detect on one core, memory per session
//   swift run -c release sentinel-bench e2e [records] [rate]          through a broker (scripts/broker/broker.sh start)
// Prints figures and asserts nothing: targets are checked by reading them, not by timed tests.

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "e2e" {
    let records = arguments.count > 1 ? Int(arguments[1]) ?? 2_000_000 : 2_000_000
    let rate = arguments.count > 2 ? Int(arguments[2]) ?? 50_000 : 50_000
    endToEndBenchmark(brokers: ProcessEnvironmentValue("SENTINEL_KAFKA_BROKERS") ?? "127.0.0.1:9092", records: records, rate: rate)
} else {
    let recordCount = arguments.count > 0 ? Int(arguments[0]) ?? 1_000_000 : 1_000_000
    let sessionCount = arguments.count > 1 ? Int(arguments[1]) ?? 10_000 : 10_000
    coreBenchmark(recordCount: recordCount, sessionCount: sessionCount)
}
