// Package recur is the schedule language of Think agents' declarative
// scheduled tasks (DESIGN §4.5): a small English-like grammar for the common
// cases and plain cron for the rest.
//
// # Grammar
//
// Keywords and day names are case-insensitive; words are separated by any
// run of white space. Zone names are IANA names and case-sensitive.
//
//	every minute              every N minutes      (intervals)
//	every hour                every N hours
//	every day at HH:mm                   [in <IANA zone>]
//	every weekday at HH:mm               [in <IANA zone>]   (Monday to Friday)
//	every week on mon,wed at HH:mm       [in <IANA zone>]
//	<five cron fields>                                      (plain cron)
//	CRON_TZ=<IANA zone> <five cron fields>
//
// Decisions:
//
//   - Number agreement is strict both ways: N = 1 takes the singular
//     (`every 1 minute`, also written `every minute`) and any other N the
//     plural (`every 5 minutes`). `every 5 minute` and `every 1 minutes` are
//     errors that name the offending number and unit.
//   - N is a whole number from 1 up to one week (10080 minutes, 168 hours);
//     longer periods are calendar schedules. Intervals are anchored to
//     multiples of the interval since the Unix epoch in UTC, so `every 15
//     minutes` runs at :00, :15, :30 and :45 whatever the process start time,
//     and runs are the same across restarts and nodes. An interval therefore
//     takes no zone: `every 5 minutes in Europe/London` is an error.
//   - A time is exactly HH:mm, 00:00 to 23:59 (two digits each; `9:00` and
//     `24:00` are errors).
//   - Days are mon, tue, wed, thu, fri, sat, sun, separated by commas (white
//     space around the commas is allowed). A day listed twice is an error.
//     The canonical form lists them Monday first.
//   - Calendar schedules without `in` run in UTC; `in UTC` is kept as written.
//   - Cron is the standard five fields (minute hour day-of-month month
//     day-of-week) read by github.com/netresearch/go-cron, in UTC unless
//     prefixed by CRON_TZ=<zone>. Descriptors (@daily, @every 5m), a seconds
//     field and the TZ= prefix are not accepted: the language says the same
//     things more plainly. A cron expression that never fires is an error.
//
// Errors are *SyntaxError values (match with errors.As, or errors.Is with
// ErrSyntax) that name the bad part of the text and the rule it breaks.
//
// # Daylight saving
//
// A calendar schedule names a wall-clock time in its zone, and every
// occurrence resolves to exactly one instant:
//
//   - in a gap (the time does not exist that day, clocks went forward) it
//     runs at the end of the gap, the first instant after the missing time:
//     Europe/London, 01:30 on 2026-03-29 runs at 02:00 BST = 01:00Z;
//   - in an overlap (the time happens twice, clocks went back) it runs at
//     the first of the two: Europe/London, 01:30 on 2026-10-25 runs at 01:30
//     BST = 00:30Z and not again at 01:30 GMT.
//
// Cron schedules follow go-cron's own daylight-saving rules.
//
// # Missed runs
//
// There is no backfill: NextAfter gives the next occurrence after the later
// of the last run and now, so occurrences missed while a process was down
// are skipped, not made up.
package recur

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	// The binary must not depend on the host's zoneinfo: a container image
	// without /usr/share/zoneinfo (or a host with a different one) must still
	// resolve every IANA zone a schedule names. time/tzdata embeds the
	// database (about 450 KB) and time.LoadLocation falls back to it.
	_ "time/tzdata"

	cron "github.com/netresearch/go-cron"
)

// Kind is the kind of a schedule.
type Kind string

// The kinds of schedule.
const (
	KindInterval Kind = "interval" // every N minutes / hours
	KindDaily    Kind = "daily"    // every day at HH:mm
	KindWeekdays Kind = "weekdays" // every weekday (Monday to Friday) at HH:mm
	KindWeekly   Kind = "weekly"   // every week on <days> at HH:mm
	KindCron     Kind = "cron"     // plain cron
)

// Limits of the language.
const (
	// MaxInterval is the longest interval: one week.
	MaxInterval = 7 * 24 * time.Hour
	// MaxLength is the longest schedule text accepted, in bytes.
	MaxLength = 512
)

// ErrSyntax matches (with errors.Is) every error Parse returns.
var ErrSyntax = errors.New("recur: bad schedule")

// SyntaxError is a schedule text that does not parse.
type SyntaxError struct {
	Input string // the whole text given to Parse
	Part  string // the offending part of it ("" when the text is empty or too long)
	Rule  string // what is wrong, naming Part, and the rule it breaks
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("recur: schedule %q: %s", e.Input, e.Rule)
}

// Is makes errors.Is(err, ErrSyntax) true.
func (e *SyntaxError) Is(target error) bool { return target == ErrSyntax }

// Spec is a parsed schedule. Make one with Parse; compare with Equal.
type Spec struct {
	Kind Kind
	// Interval is the period of an interval schedule: whole minutes, from
	// one minute to MaxInterval.
	Interval time.Duration
	// Hour and Minute are the wall-clock time of a calendar schedule
	// (daily, weekdays, weekly).
	Hour, Minute int
	// Days are the days of a weekly schedule, Monday first, no duplicates.
	Days []time.Weekday
	// Cron is a cron schedule's five fields, single-spaced, without the
	// CRON_TZ prefix.
	Cron string
	// Zone is the IANA zone of a calendar or cron schedule, "" for UTC.
	Zone string

	loc  *time.Location
	cron cron.Schedule
}

// Parse parses a schedule (see the package documentation for the
// grammar). Its errors are *SyntaxError.
func Parse(text string) (*Spec, error) {
	p := parser{input: text}
	s, err := p.parse()
	if err != nil {
		return nil, err
	}
	return s, nil
}

// MustParse is Parse that panics on an error, for schedules fixed in code.
func MustParse(text string) *Spec {
	s, err := Parse(text)
	if err != nil {
		panic(err)
	}
	return s
}

// String is the canonical text of the schedule; it parses back to an
// equal Spec.
func (s *Spec) String() string {
	var b strings.Builder
	switch s.Kind {
	case KindInterval:
		n, unit := int64(s.Interval/time.Minute), "minute"
		if n%60 == 0 {
			n, unit = n/60, "hour"
		}
		if n == 1 {
			return "every " + unit
		}
		return fmt.Sprintf("every %d %ss", n, unit)
	case KindCron:
		if s.Zone != "" {
			b.WriteString("CRON_TZ=" + s.Zone + " ")
		}
		b.WriteString(s.Cron)
		return b.String()
	case KindDaily:
		b.WriteString("every day")
	case KindWeekdays:
		b.WriteString("every weekday")
	case KindWeekly:
		b.WriteString("every week on ")
		for i, d := range s.Days {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(dayNames[d])
		}
	default:
		return fmt.Sprintf("<invalid schedule kind %q>", string(s.Kind))
	}
	fmt.Fprintf(&b, " at %02d:%02d", s.Hour, s.Minute)
	if s.Zone != "" {
		b.WriteString(" in " + s.Zone)
	}
	return b.String()
}

// Equal reports whether two specs are the same schedule as written
// (same kind, period or time, days, cron fields and zone name).
func (s *Spec) Equal(o *Spec) bool {
	if s == nil || o == nil {
		return s == o
	}
	return s.Kind == o.Kind && s.Interval == o.Interval && s.Hour == o.Hour &&
		s.Minute == o.Minute && slices.Equal(s.Days, o.Days) && s.Cron == o.Cron && s.Zone == o.Zone
}

// Location is the zone a calendar or cron schedule's times are read in
// (UTC when Zone is ""); an interval schedule's is UTC.
func (s *Spec) Location() *time.Location {
	if s.loc != nil {
		return s.loc
	}
	if s.Zone == "" {
		return time.UTC
	}
	if loc, err := loadZone(s.Zone); err == nil {
		return loc
	}
	return time.UTC
}

// OccurrenceKey is the idempotency key of one occurrence of a task:
// "task:<taskID>:<scheduled time, RFC 3339 in UTC>", for example
// "task:digest:2026-03-29T01:00:00Z". at is the occurrence's scheduled
// time (what Next returned), never the time it actually ran, so every
// attempt, retry and node that runs the same occurrence derives the same
// key, and the key does not depend on the zone at is expressed in.
// Sub-second parts, which occurrences do not have, are kept when present.
func OccurrenceKey(taskID string, at time.Time) string {
	return "task:" + taskID + ":" + at.UTC().Format(time.RFC3339Nano)
}

// NextAfter is the next run of a recurring task that last ran (was
// scheduled) at lastRun, as of now: the first occurrence strictly after
// the later of lastRun and now. A zero lastRun means it never ran.
//
// There is deliberately no backfill: occurrences between lastRun and now,
// missed while the process was down or the task overran, are skipped, not
// run late one after another.
func NextAfter(spec *Spec, lastRun, now time.Time) time.Time {
	after := now
	if lastRun.After(now) {
		after = lastRun
	}
	return spec.Next(after)
}

var dayNames = [7]string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// zones caches loaded locations by name: time.LoadLocation reads and
// decodes zoneinfo on every call.
var zones sync.Map // string → *time.Location

// loadZone loads an IANA zone. "Local" is refused: it is the host's zone,
// which is what a schedule must not depend on.
func loadZone(name string) (*time.Location, error) {
	if v, ok := zones.Load(name); ok {
		return v.(*time.Location), nil
	}
	if name == "" || name == "Local" || len(name) > 64 {
		return nil, errors.New("not an IANA zone")
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	zones.Store(name, loc)
	return loc, nil
}

// parser parses one schedule text.
type parser struct {
	input string
}

func (p *parser) fail(part, format string, args ...any) error {
	return &SyntaxError{Input: p.input, Part: part, Rule: fmt.Sprintf(format, args...)}
}

const grammarHint = "a schedule is `every N minutes`, `every N hours`, `every day at HH:mm`, " +
	"`every weekday at HH:mm`, `every week on mon,wed at HH:mm` (each calendar one optionally " +
	"`in <IANA zone>`) or five cron fields"

func (p *parser) parse() (*Spec, error) {
	if len(p.input) > MaxLength {
		return nil, p.fail("", "the schedule is %d bytes long, more than %d", len(p.input), MaxLength)
	}
	toks := strings.Fields(p.input)
	if len(toks) == 0 {
		return nil, p.fail("", "the schedule is empty; %s", grammarHint)
	}
	if strings.EqualFold(toks[0], "every") {
		return p.language(toks)
	}
	return p.cron(toks)
}

// language parses `every …`.
func (p *parser) language(toks []string) (*Spec, error) {
	// Split off `in <zone>`.
	body, zone, hasZone := toks[1:], "", false
	for i := 1; i < len(toks); i++ {
		if strings.EqualFold(toks[i], "in") {
			body, hasZone = toks[1:i], true
			switch rest := toks[i+1:]; {
			case len(rest) == 0:
				return nil, p.fail(toks[i], "%q is not followed by a zone: write an IANA zone such as Europe/London after it", toks[i])
			case len(rest) > 1:
				extra := strings.Join(rest[1:], " ")
				return nil, p.fail(extra, "%q follows the zone %q: nothing may follow the zone (an IANA zone name has no spaces)", extra, rest[0])
			default:
				zone = rest[0]
			}
			break
		}
	}
	s, err := p.body(toks[0], body)
	if err != nil {
		return nil, err
	}
	if !hasZone {
		return s, nil
	}
	if s.Kind == KindInterval {
		part := "in " + zone
		return nil, p.fail(part, "%q: an interval takes no zone (intervals run on multiples of the interval since the epoch, in UTC); zones go on `every day|weekday|week … at HH:mm`", part)
	}
	loc, err := loadZone(zone)
	if err != nil {
		return nil, p.fail(zone, "unknown zone %q: a zone is an IANA name such as Europe/London or America/New_York", zone)
	}
	s.Zone, s.loc = zone, loc
	return s, nil
}

// body parses what lies between `every` and `in`.
func (p *parser) body(every string, b []string) (*Spec, error) {
	if len(b) == 0 {
		return nil, p.fail(every, "%q is not followed by anything; %s", every, grammarHint)
	}
	w := strings.ToLower(b[0])
	switch w {
	case "minute", "hour":
		if err := p.end(b[1:], b[0]); err != nil {
			return nil, err
		}
		return interval(1, w), nil
	case "minutes", "hours":
		return nil, p.fail(b[0], "%q needs a number: write `every %s` or `every N %s`", b[0], strings.TrimSuffix(w, "s"), w)
	case "day", "weekday":
		kind := KindDaily
		if w == "weekday" {
			kind = KindWeekdays
		}
		s := &Spec{Kind: kind, loc: time.UTC}
		if err := p.at(s, b, 1); err != nil {
			return nil, err
		}
		return s, nil
	case "week":
		return p.week(b)
	}
	if isNumber(w) {
		return p.interval(b)
	}
	if strings.Contains(w, ":") {
		if _, _, err := p.clock(b[0]); err != nil {
			return nil, err
		}
		return nil, p.fail(b[0], "the time %q needs a day: write `every day at %s`, `every weekday at %s` or `every week on <days> at %s`", b[0], b[0], b[0], b[0])
	}
	return nil, p.fail(b[0], "%q is not a number, minute, hour, day, weekday or week; %s", b[0], grammarHint)
}

func isNumber(w string) bool {
	w = strings.TrimLeft(w, "+-")
	if w == "" {
		return false
	}
	for _, r := range w {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func interval(n int64, unit string) *Spec {
	d := time.Minute
	if unit == "hour" || unit == "hours" {
		d = time.Hour
	}
	return &Spec{Kind: KindInterval, Interval: time.Duration(n) * d, loc: time.UTC}
}

// interval parses `N unit`.
func (p *parser) interval(b []string) (*Spec, error) {
	num := b[0]
	if len(b) == 1 {
		return nil, p.fail(num, "the number %q is not followed by a unit: write `every %s minutes` or `every %s hours`", num, num, num)
	}
	unit := strings.ToLower(b[1])
	var limit int64
	switch unit {
	case "minute", "minutes":
		limit = int64(MaxInterval / time.Minute)
	case "hour", "hours":
		limit = int64(MaxInterval / time.Hour)
	default:
		hint := ""
		if strings.HasPrefix(unit, "day") || strings.HasPrefix(unit, "week") {
			hint = "; for days and weeks use `every day at HH:mm` or `every week on <days> at HH:mm`"
		}
		return nil, p.fail(b[1], "unknown unit %q: the unit is minute(s) or hour(s)%s", b[1], hint)
	}
	plural := strings.HasSuffix(unit, "s")
	singular := strings.TrimSuffix(unit, "s")
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 1 || n > limit || num[0] == '+' {
		return nil, p.fail(num, "the number %q is not a whole number from 1 to %d %ss (an interval is at most a week; longer ones are calendar schedules)", num, limit, singular)
	}
	if n == 1 && plural {
		part := num + " " + b[1]
		return nil, p.fail(part, "%q: 1 takes the singular, write `every 1 %s` or `every %s`", part, singular, singular)
	}
	if n != 1 && !plural {
		part := num + " " + b[1]
		return nil, p.fail(part, "%q: a number other than 1 takes the plural, write `every %d %ss`", part, n, singular)
	}
	if err := p.end(b[2:], b[1]); err != nil {
		return nil, err
	}
	return interval(n, unit), nil
}

// week parses `week on <days> at HH:mm`.
func (p *parser) week(b []string) (*Spec, error) {
	if len(b) < 2 || !strings.EqualFold(b[1], "on") {
		part := b[0]
		if len(b) >= 2 {
			part = b[1]
		}
		return nil, p.fail(part, "%q: `every week` is followed by `on <days> at HH:mm`, e.g. `every week on mon,wed at 09:00`", part)
	}
	i := 2
	for i < len(b) && !strings.EqualFold(b[i], "at") {
		i++
	}
	if i == 2 {
		return nil, p.fail(b[1], "%q is not followed by days: write days such as mon,wed", b[1])
	}
	list := strings.Join(b[2:i], " ")
	var seen [7]bool
	var days []time.Weekday
	for _, item := range strings.Split(list, ",") {
		name := strings.TrimSpace(item)
		if name == "" {
			return nil, p.fail(list, "the day list %q has an empty entry: days are separated by single commas, e.g. mon,wed", list)
		}
		d, ok := weekday(name)
		if !ok {
			if strings.ContainsAny(name, " \t") {
				return nil, p.fail(name, "%q: days are separated by commas, e.g. mon,wed", name)
			}
			return nil, p.fail(name, "unknown day %q: days are mon, tue, wed, thu, fri, sat, sun", name)
		}
		if seen[d] {
			return nil, p.fail(name, "day %q is listed twice: list each day once", name)
		}
		seen[d] = true
		days = append(days, d)
	}
	slices.SortFunc(days, func(a, b time.Weekday) int { return mondayFirst(a) - mondayFirst(b) })
	s := &Spec{Kind: KindWeekly, Days: days, loc: time.UTC}
	if i == len(b) {
		return nil, p.fail(b[i-1], "the days %q are not followed by `at HH:mm`", list)
	}
	if err := p.at(s, b, i); err != nil {
		return nil, err
	}
	return s, nil
}

func mondayFirst(d time.Weekday) int { return (int(d) + 6) % 7 }

func weekday(name string) (time.Weekday, bool) {
	for i, n := range dayNames {
		if strings.EqualFold(name, n) {
			return time.Weekday(i), true
		}
	}
	return 0, false
}

// at parses `at HH:mm` at b[i] and what follows it into s.
func (p *parser) at(s *Spec, b []string, i int) error {
	if i >= len(b) {
		return p.fail(b[i-1], "%q is not followed by `at HH:mm`", strings.Join(b[:i], " "))
	}
	if !strings.EqualFold(b[i], "at") {
		return p.fail(b[i], "%q where `at HH:mm` should follow %q", b[i], strings.Join(b[:i], " "))
	}
	if i+1 >= len(b) {
		return p.fail(b[i], "%q is not followed by a time: write HH:mm, 00:00–23:59", b[i])
	}
	h, m, err := p.clock(b[i+1])
	if err != nil {
		return err
	}
	s.Hour, s.Minute = h, m
	return p.end(b[i+2:], b[i+1])
}

// clock parses HH:mm.
func (p *parser) clock(w string) (int, int, error) {
	bad := p.fail(w, "the time %q is not HH:mm 00:00–23:59", w)
	if len(w) != 5 || w[2] != ':' {
		return 0, 0, bad
	}
	for _, i := range []int{0, 1, 3, 4} {
		if w[i] < '0' || w[i] > '9' {
			return 0, 0, bad
		}
	}
	h := int(w[0]-'0')*10 + int(w[1]-'0')
	m := int(w[3]-'0')*10 + int(w[4]-'0')
	if h > 23 || m > 59 {
		return 0, 0, bad
	}
	return h, m, nil
}

// end checks that nothing but `in <zone>` (already split off) follows.
func (p *parser) end(rest []string, last string) error {
	if len(rest) == 0 {
		return nil
	}
	extra := strings.Join(rest, " ")
	return p.fail(extra, "unexpected %q after %q: only `in <IANA zone>` may follow", extra, last)
}

// cronParser reads standard five-field cron, without descriptors.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// cronEpoch is where Parse looks for a first run, to refuse expressions
// that never fire (such as 30 February).
var cronEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// cron parses plain cron.
func (p *parser) cron(toks []string) (*Spec, error) {
	first := toks[0]
	zone := ""
	loc := time.UTC
	if rest, ok := strings.CutPrefix(first, "CRON_TZ="); ok {
		zone = rest
		if zone == "" {
			return nil, p.fail(first, "%q names no zone: write CRON_TZ=<IANA zone>, e.g. CRON_TZ=Europe/London", first)
		}
		var err error
		if loc, err = loadZone(zone); err != nil {
			return nil, p.fail(zone, "unknown zone %q: a zone is an IANA name such as Europe/London or America/New_York", zone)
		}
		toks = toks[1:]
	} else if strings.HasPrefix(strings.ToUpper(first), "TZ=") || strings.HasPrefix(strings.ToUpper(first), "CRON_TZ=") {
		return nil, p.fail(first, "%q: a cron zone is written CRON_TZ=<IANA zone>", first)
	}
	if len(toks) == 0 {
		return nil, p.fail(first, "%q is not followed by five cron fields", first)
	}
	lead := toks[0]
	switch c := lead[0]; {
	case c == '@':
		return nil, p.fail(lead, "the cron descriptor %q is not accepted: write five cron fields or `every …` (e.g. `every day at 00:00`)", lead)
	case !(c >= '0' && c <= '9') && c != '*' && c != '?':
		return nil, p.fail(lead, "%q does not begin a schedule; %s", lead, grammarHint)
	}
	if len(toks) == 7 && strings.EqualFold(toks[5], "in") {
		part := "in " + toks[6]
		return nil, p.fail(part, "%q: a cron expression takes its zone as a prefix, write `CRON_TZ=%s %s`", part, toks[6], strings.Join(toks[:5], " "))
	}
	expr := strings.Join(toks, " ")
	if len(toks) != 5 {
		return nil, p.fail(expr, "the cron expression %q has %d fields, not 5 (minute hour day-of-month month day-of-week)", expr, len(toks))
	}
	sched, err := cronParser.Parse("CRON_TZ=" + loc.String() + " " + expr)
	if err != nil {
		return nil, p.fail(expr, "the cron expression %q does not parse: %v", expr, err)
	}
	if sched.Next(cronEpoch).IsZero() {
		return nil, p.fail(expr, "the cron expression %q never fires", expr)
	}
	return &Spec{Kind: KindCron, Cron: expr, Zone: zone, loc: loc, cron: sched}, nil
}
