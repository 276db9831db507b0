import CoreMetrics
import Prometheus

/// swift-metrics' factory over the daemon's Prometheus registry, so that the sinks count with
/// swift-metrics instruments they hold themselves (`Counter(label:dimensions:factory:)`) and
/// `/metrics` emits them from the one registry. swift-metrics has no place for a metric's help
/// text: it comes from `help` (each module's own table), keyed by label.
public struct DescribedMetricsFactory: MetricsFactory {
    let registry: PrometheusCollectorRegistry
    let help: [String: String]
    private let plain: PrometheusMetricsFactory

    public init(registry: PrometheusCollectorRegistry, help: [String: String]) {
        self.registry = registry
        self.help = help
        plain = PrometheusMetricsFactory(registry: registry)
    }

    private func described(_ label: String) -> MetricNameDescriptor { .named(label, help: help[label] ?? "") }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: described(label), labels: dimensions)
    }

    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: described(label), labels: dimensions)
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: described(label), labels: dimensions)
    }

    /// A non-aggregating recorder (swift-metrics' `Gauge`) is a Prometheus gauge.
    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        aggregate
            ? plain.makeRecorder(label: label, dimensions: dimensions, aggregate: true)
            : registry.makeGauge(descriptor: described(label), labels: dimensions)
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler { plain.makeTimer(label: label, dimensions: dimensions) }
    public func destroyCounter(_ handler: any CounterHandler) { plain.destroyCounter(handler) }
    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) { plain.destroyFloatingPointCounter(handler) }
    public func destroyMeter(_ handler: any MeterHandler) { plain.destroyMeter(handler) }
    public func destroyRecorder(_ handler: any RecorderHandler) { plain.destroyRecorder(handler) }
    public func destroyTimer(_ handler: any TimerHandler) { plain.destroyTimer(handler) }
}

extension MetricNameDescriptor {
    /// A metric by its full name (no namespace or unit parts added) with its help text.
    static func named(_ name: String, help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }
}
