// sentinel-bench: figures, not tests. Run in release:
//   swift run -c release sentinel-bench [records] [sessions]          parse+detect on one core, memory per session
//   swift run -c release sentinel-bench e2e [records] [rate]          through a broker (scripts/broker/broker.sh start);
//                                                                     SENTINEL_BENCH_INFLUX_URL adds an InfluxDB sink
//   swift run -c release sentinel-bench lines [records] [sessions] > F  the benchmark's lines, to time `cmcd-sentinel detect F`
//   swift run -c release sentinel-bench alerts [findings]              the alerts table's (SQLite) cost per finding
//                                                                     (SENTINEL_BENCH_BATCH: findings a transaction)
// Prints figures and asserts nothing: targets are checked by reading them, not by timed tests.

import Foundation

/// Says what is wrong with the arguments on stderr and exits with status 2.
func usageError(_ message: String) -> Never {
    FileHandle.standardError.write(Data("sentinel-bench: \(message)\n".utf8))
    exit(2)
}

let arguments = Array(CommandLine.arguments.dropFirst())

/// The positive whole number given as argument `index` (`fallback` when there is none).
func count(_ index: Int, _ name: String, fallback: Int) -> Int {
    guard index < arguments.count else { return fallback }
    guard let value = Int(arguments[index]), value > 0 else {
        usageError("\(name) must be a positive whole number, not '\(arguments[index])'")
    }
    return value
}

if arguments.first == "lines" {
    var generator = LineGenerator(sessions: count(2, "sessions", fallback: 10_000))
    var out: [UInt8] = []
    out.reserveCapacity(1 << 20)
    for _ in 0..<count(1, "records", fallback: 1_000_000) {
        out += generator.next()
        out.append(0x0A)
        if out.count >= 1 << 20 {
            FileHandle.standardOutput.write(Data(out))
            out.removeAll(keepingCapacity: true)
        }
    }
    FileHandle.standardOutput.write(Data(out))
} else if arguments.first == "e2e" {
    let records = count(1, "records", fallback: 2_000_000)
    let rate = count(2, "rate", fallback: 50_000)
    await endToEndBenchmark(brokers: ProcessEnvironmentValue("SENTINEL_KAFKA_BROKERS") ?? "127.0.0.1:9092", records: records, rate: rate)
} else if arguments.first == "bare-consumer", arguments.count == 5 {
    bareConsumerProcess(brokers: arguments[1], topic: arguments[2], group: arguments[3], records: count(4, "records", fallback: 1))
} else if arguments.first == "daemon-run", arguments.count == 6 {
    await daemonRunProcess(brokers: arguments[1], topic: arguments[2], group: arguments[3], records: count(4, "records", fallback: 1), variant: arguments[5])
} else if arguments.first == "alerts" {
    await alertsBenchmark(findingCount: count(1, "findings", fallback: 50_000))
} else {
    coreBenchmark(recordCount: count(0, "records", fallback: 1_000_000), sessionCount: count(1, "sessions", fallback: 10_000))
}
