import Foundation

/// A recurring window in local time of an IANA time zone, e.g. `sat,sun 02:00-04:00` in
/// `Europe/Berlin`: a silence with one is active only inside it. Local times are resolved per
/// day, so a window keeps its wall-clock hours across daylight-saving changes (on the day the
/// clocks go forward, 02:00-04:00 lasts one hour; on the day they go back, three).
public struct MaintenanceWindow: Sendable, Equatable {
    /// Calendar weekdays, 1 = Sunday ... 7 = Saturday.
    public var weekdays: Set<Int>
    /// Minutes after local midnight the window starts and ends (an end at or before the start
    /// is on the next day).
    public var startMinute: Int
    public var endMinute: Int
    public let timeZone: TimeZone

    static let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    /// Parses `DAYS HH:MM-HH:MM` (DAYS: `mon,tue,...`, `daily`, `weekdays` or `weekends`) in the
    /// IANA zone `timeZone`.
    public init(_ text: String, timeZone identifier: String) throws {
        guard let zone = TimeZone(identifier: identifier) else { throw SQLError("'\(identifier.prefix(60))' is not an IANA time zone") }
        timeZone = zone
        let parts = text.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 2 else { throw SQLError("'\(text.prefix(60))' is not DAYS HH:MM-HH:MM (e.g. sat,sun 02:00-04:00)") }
        var days = Set<Int>()
        for name in parts[0].lowercased().split(separator: ",") {
            switch name {
            case "daily": days.formUnion(1...7)
            case "weekdays": days.formUnion(2...6)
            case "weekends": days.formUnion([1, 7])
            default:
                guard let index = Self.dayNames.firstIndex(of: String(name.prefix(3))), name.count >= 3 else {
                    throw SQLError("'\(name.prefix(20))' is not a day (mon ... sun, daily, weekdays, weekends)")
                }
                days.insert(index + 1)
            }
        }
        let times = parts[1].split(separator: "-")
        guard times.count == 2, let start = Self.minutes(times[0]), let end = Self.minutes(times[1]), start != end else {
            throw SQLError("'\(parts[1].prefix(20))' is not HH:MM-HH:MM")
        }
        weekdays = days
        startMinute = start
        endMinute = end
    }

    static func minutes(_ text: Substring) -> Int? {
        let hm = text.split(separator: ":")
        guard hm.count == 2, let h = Int(hm[0]), let m = Int(hm[1]), (0...24).contains(h), (0...59).contains(m), h * 60 + m <= 1_440 else { return nil }
        return h * 60 + m
    }

    /// The text it was parsed from, normalised.
    public var text: String {
        let days = weekdays.sorted().map { Self.dayNames[$0 - 1] }.joined(separator: ",")
        func hm(_ m: Int) -> String { String(format: "%02d:%02d", m / 60, m % 60) }
        return "\(days) \(hm(startMinute))-\(hm(endMinute))"
    }

    /// Whether the instant (ms since the epoch) lies in a window: one that starts on its local
    /// day, or on the day before and runs past midnight.
    public func contains(_ ms: Int64) -> Bool {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let instant = Date(timeIntervalSince1970: Double(ms) / 1_000)
        let today = calendar.startOfDay(for: instant)
        for offset in [0, -1] {
            guard let day = calendar.date(byAdding: .day, value: offset, to: today), weekdays.contains(calendar.component(.weekday, from: day)),
                let span = span(on: day, calendar)
            else { continue }
            if span.contains(instant) { return true }
        }
        return false
    }

    /// The window starting on the local `day`, as instants: its local start and end resolved on
    /// that day's clock (a start inside a skipped hour begins when the clock resumes).
    func span(on day: Date, _ calendar: Calendar) -> Range<Date>? {
        let date = calendar.dateComponents([.year, .month, .day], from: day)
        func at(_ minute: Int, daysLater: Int) -> Date? {
            var c = date
            c.day! += daysLater + minute / 1_440
            c.hour = (minute % 1_440) / 60
            c.minute = minute % 60
            return calendar.date(from: c)
        }
        guard let start = at(startMinute, daysLater: 0), let end = at(endMinute, daysLater: endMinute <= startMinute ? 1 : 0), start < end else {
            return nil
        }
        return start..<end
    }

    public static func == (a: MaintenanceWindow, b: MaintenanceWindow) -> Bool {
        a.weekdays == b.weekdays && a.startMinute == b.startMinute && a.endMinute == b.endMinute && a.timeZone.identifier == b.timeZone.identifier
    }
}
