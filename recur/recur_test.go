package recur

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseCanonical(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
		kind     Kind
		zone     string
	}{
		{"every minute", "every minute", KindInterval, ""},
		{"every 1 minute", "every minute", KindInterval, ""},
		{"Every 5 Minutes", "every 5 minutes", KindInterval, ""},
		{"every 15 minutes", "every 15 minutes", KindInterval, ""},
		{"every 05 minutes", "every 5 minutes", KindInterval, ""},
		{"every 120 minutes", "every 2 hours", KindInterval, ""},
		{"every 60 minutes", "every hour", KindInterval, ""},
		{"every hour", "every hour", KindInterval, ""},
		{"every 1 hour", "every hour", KindInterval, ""},
		{"every 3 hours", "every 3 hours", KindInterval, ""},
		{"every 168 hours", "every 168 hours", KindInterval, ""},
		{"every 10080 minutes", "every 168 hours", KindInterval, ""},
		{"  every\tday   at 09:00 ", "every day at 09:00", KindDaily, ""},
		{"every day at 00:00", "every day at 00:00", KindDaily, ""},
		{"every day at 23:59 in UTC", "every day at 23:59 in UTC", KindDaily, "UTC"},
		{"EVERY DAY AT 01:30 IN Europe/London", "every day at 01:30 in Europe/London", KindDaily, "Europe/London"},
		{"every weekday at 08:15 in America/New_York", "every weekday at 08:15 in America/New_York", KindWeekdays, "America/New_York"},
		{"every week on mon,wed at 09:00", "every week on mon,wed at 09:00", KindWeekly, ""},
		{"every week on WED, Mon at 09:00", "every week on mon,wed at 09:00", KindWeekly, ""},
		{"every week on sun , sat,mon at 18:30 in Asia/Tokyo", "every week on mon,sat,sun at 18:30 in Asia/Tokyo", KindWeekly, "Asia/Tokyo"},
		{"*/5 * * * *", "*/5 * * * *", KindCron, ""},
		{"0   9 * *   MON-FRI", "0 9 * * MON-FRI", KindCron, ""},
		{"CRON_TZ=Europe/London 30 1 * * *", "CRON_TZ=Europe/London 30 1 * * *", KindCron, "Europe/London"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			s, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got := s.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			if s.Kind != tt.kind || s.Zone != tt.zone {
				t.Errorf("Kind, Zone = %q, %q, want %q, %q", s.Kind, s.Zone, tt.kind, tt.zone)
			}
			back, err := Parse(s.String())
			if err != nil || !back.Equal(s) {
				t.Errorf("String() %q parses back to %+v, %v; want %+v", s.String(), back, err, s)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		part     string // SyntaxError.Part
		says     string // a phrase of the message
	}{
		{"empty", "", "", "empty"},
		{"blank", "  \t ", "", "empty"},
		{"every alone", "every", "every", "not followed"},
		{"time without day", "every 25:00", "25:00", `the time "25:00" is not HH:mm 00:00–23:59`},
		{"valid time without day", "every 09:00", "09:00", "needs a day"},
		{"hour 24", "every day at 24:00", "24:00", "is not HH:mm"},
		{"minute 60", "every day at 12:60", "12:60", "is not HH:mm"},
		{"one-digit hour", "every day at 9:00", "9:00", "is not HH:mm"},
		{"no time", "every day at", "at", "not followed by a time"},
		{"no at", "every day", "day", "`at HH:mm`"},
		{"wrong word for at", "every day on 09:00", "on", "`at HH:mm`"},
		{"missing zone", "every day at 01:30 in", "in", "not followed by a zone"},
		{"unknown zone", "every day at 01:30 in Mars/Olympus", "Mars/Olympus", `unknown zone "Mars/Olympus"`},
		{"zone is case-sensitive", "every day at 01:30 in europe/london", "europe/london", "unknown zone"},
		{"Local refused", "every day at 01:30 in Local", "Local", "unknown zone"},
		{"text after zone", "every day at 01:30 in America/New York", "York", "nothing may follow the zone"},
		{"zone on interval", "every 5 minutes in Europe/London", "in Europe/London", "an interval takes no zone"},
		{"zone on every hour", "every hour in UTC", "in UTC", "an interval takes no zone"},
		{"singular with 5", "every 5 minute", "5 minute", "plural"},
		{"plural with 1", "every 1 minutes", "1 minutes", "singular"},
		{"plural with 1 hour", "every 1 hours", "1 hours", "singular"},
		{"unit without number", "every minutes", "minutes", "needs a number"},
		{"zero", "every 0 minutes", "0", "from 1 to 10080"},
		{"negative", "every -5 minutes", "-5", "from 1 to"},
		{"too long interval", "every 169 hours", "169", "from 1 to 168"},
		{"huge number", "every 99999999999999999999 minutes", "99999999999999999999", "from 1 to"},
		{"no unit", "every 5", "5", "not followed by a unit"},
		{"unknown unit", "every 5 seconds", "seconds", `unknown unit "seconds"`},
		{"days unit", "every 2 days", "days", "every day at"},
		{"unknown word", "every fortnight", "fortnight", "is not a number"},
		{"extra after interval", "every 5 minutes please", "please", "unexpected"},
		{"extra after time", "every day at 09:00 sharp", "sharp", "unexpected"},
		{"duplicate day", "every week on mon,wed,Mon at 09:00", "Mon", `day "Mon" is listed twice`},
		{"bad day name", "every week on mon,funday at 09:00", "funday", `unknown day "funday"`},
		{"full day name", "every week on monday at 09:00", "monday", "unknown day"},
		{"days without comma", "every week on mon wed at 09:00", "mon wed", "separated by commas"},
		{"empty day", "every week on mon,,wed at 09:00", "mon,,wed", "empty entry"},
		{"no days", "every week on at 09:00", "on", "not followed by days"},
		{"week without on", "every week at 09:00", "at", "`every week` is followed by `on"},
		{"days without at", "every week on mon", "mon", "not followed by `at HH:mm`"},
		{"cron 4 fields", "*/5 * * *", "*/5 * * *", "has 4 fields, not 5"},
		{"cron 6 fields", "0 */5 * * * *", "0 */5 * * * *", "has 6 fields"},
		{"cron bad field", "61 * * * *", "61 * * * *", "does not parse"},
		{"cron never fires", "0 0 30 2 *", "0 0 30 2 *", "never fires"},
		{"cron descriptor", "@daily", "@daily", "descriptor"},
		{"cron unknown zone", "CRON_TZ=Mars/Olympus 0 9 * * *", "Mars/Olympus", `unknown zone "Mars/Olympus"`},
		{"cron empty zone", "CRON_TZ= 0 9 * * *", "CRON_TZ=", "names no zone"},
		{"cron TZ prefix", "TZ=UTC 0 9 * * *", "TZ=UTC", "CRON_TZ="},
		{"cron zone only", "CRON_TZ=UTC", "CRON_TZ=UTC", "five cron fields"},
		{"cron zone suffix", "0 9 * * * in Europe/London", "in Europe/London", "CRON_TZ=Europe/London 0 9 * * *"},
		{"not a schedule", "daily at 09:00", "daily", "does not begin a schedule"},
		{"too long", "every " + strings.Repeat("x", MaxLength), "", "more than 512"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %v, want an error", tt.in, s)
			}
			if !errors.Is(err, ErrSyntax) {
				t.Errorf("errors.Is(%v, ErrSyntax) = false", err)
			}
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("error %v (%T) is not a *SyntaxError", err, err)
			}
			if se.Input != tt.in || se.Part != tt.part {
				t.Errorf("Input, Part = %q, %q, want %q, %q", se.Input, se.Part, tt.in, tt.part)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Errorf("error %q does not say %q", err, tt.says)
			}
			if tt.part != "" && !strings.Contains(se.Rule, tt.part) {
				t.Errorf("rule %q does not name the part %q", se.Rule, tt.part)
			}
		})
	}
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// TestNext checks Next (and chains of it) against expected UTC instants.
func TestNext(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, spec, after string
		want              []string // successive occurrences
	}{
		// Europe/London: BST starts 2026-03-29 01:00Z (01:00→02:00 local),
		// ends 2026-10-25 01:00Z (02:00→01:00 local).
		{"London gap: 01:30 runs at 02:00 BST", "every day at 01:30 in Europe/London", "2026-03-28T12:00:00Z",
			[]string{"2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"}},
		{"London day before gap", "every day at 01:30 in Europe/London", "2026-03-27T12:00:00Z",
			[]string{"2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z"}},
		{"London overlap: first 01:30 only", "every day at 01:30 in Europe/London", "2026-10-24T12:00:00Z",
			[]string{"2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"}[1:]},
		{"London overlap: not again at 01:30Z", "every day at 01:30 in Europe/London", "2026-10-25T00:30:00Z",
			[]string{"2026-10-26T01:30:00Z"}},
		{"London after 02:00 shift unaffected", "every day at 02:30 in Europe/London", "2026-03-28T12:00:00Z",
			[]string{"2026-03-29T01:30:00Z"}},
		{"London 01:00 in overlap", "every day at 01:00 in Europe/London", "2026-10-24T23:00:00Z",
			[]string{"2026-10-25T00:00:00Z", "2026-10-26T01:00:00Z"}},
		// America/New_York: EDT starts 2026-03-08 07:00Z (02:00→03:00
		// local), ends 2026-11-01 06:00Z (02:00→01:00 local).
		{"New York gap: 02:30 runs at 03:00 EDT", "every day at 02:30 in America/New_York", "2026-03-07T12:00:00Z",
			[]string{"2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"}},
		{"New York before gap", "every day at 01:59 in America/New_York", "2026-03-07T12:00:00Z",
			[]string{"2026-03-08T06:59:00Z", "2026-03-09T05:59:00Z"}},
		{"New York overlap: first 01:30 (EDT)", "every day at 01:30 in America/New_York", "2026-10-31T12:00:00Z",
			[]string{"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"}},
		{"New York weekday across fall back", "every weekday at 09:00 in America/New_York", "2026-10-30T14:00:00Z",
			[]string{"2026-11-02T14:00:00Z", "2026-11-03T14:00:00Z"}},
		// Weekdays skip weekends: 2026-05-01 is a Friday.
		{"weekdays skip the weekend", "every weekday at 08:00", "2026-05-01T07:00:00Z",
			[]string{"2026-05-01T08:00:00Z", "2026-05-04T08:00:00Z", "2026-05-05T08:00:00Z"}},
		{"weekdays from Saturday", "every weekday at 08:00", "2026-05-02T07:00:00Z",
			[]string{"2026-05-04T08:00:00Z"}},
		{"weekday in the zone's calendar", "every weekday at 08:00 in Asia/Tokyo", "2026-05-03T12:00:00Z",
			[]string{"2026-05-03T23:00:00Z", "2026-05-04T23:00:00Z"}}, // Monday 08:00 JST = Sunday 23:00Z
		// Weekly: 2026-05-04 is a Monday.
		{"weekly mon,wed,fri", "every week on fri,mon,wed at 18:00", "2026-05-04T18:00:00Z",
			[]string{"2026-05-06T18:00:00Z", "2026-05-08T18:00:00Z", "2026-05-11T18:00:00Z"}},
		{"weekly single day a week on", "every week on sun at 00:00", "2026-05-03T00:00:00Z",
			[]string{"2026-05-10T00:00:00Z"}},
		{"daily strictly after", "every day at 09:00", "2026-05-04T09:00:00Z",
			[]string{"2026-05-05T09:00:00Z"}},
		{"daily just before", "every day at 09:00", "2026-05-04T08:59:59.999Z",
			[]string{"2026-05-04T09:00:00Z"}},
		// Intervals on UTC epoch multiples.
		{"every 15 minutes anchored", "every 15 minutes", "2026-05-04T10:07:31Z",
			[]string{"2026-05-04T10:15:00Z", "2026-05-04T10:30:00Z", "2026-05-04T10:45:00Z", "2026-05-04T11:00:00Z"}},
		{"interval on a boundary", "every 15 minutes", "2026-05-04T10:15:00Z",
			[]string{"2026-05-04T10:30:00Z"}},
		{"every hour", "every hour", "2026-05-04T10:59:59Z",
			[]string{"2026-05-04T11:00:00Z", "2026-05-04T12:00:00Z"}},
		{"every 7 minutes: epoch multiples", "every 7 minutes", "1970-01-01T00:00:00Z",
			[]string{"1970-01-01T00:07:00Z", "1970-01-01T00:14:00Z"}},
		{"every 5 hours before the epoch", "every 5 hours", "1969-12-31T20:30:00Z",
			[]string{"1970-01-01T00:00:00Z", "1970-01-01T05:00:00Z"}},
		// Cron, in UTC or its CRON_TZ zone.
		{"cron UTC", "30 1 * * *", "2026-05-04T12:00:00Z",
			[]string{"2026-05-05T01:30:00Z"}},
		{"cron CRON_TZ", "CRON_TZ=America/New_York 0 9 * * MON-FRI", "2026-05-01T14:00:00Z",
			[]string{"2026-05-04T13:00:00Z", "2026-05-05T13:00:00Z"}},
		{"cron CRON_TZ London winter", "CRON_TZ=Europe/London 0 9 * * *", "2026-01-10T12:00:00Z",
			[]string{"2026-01-11T09:00:00Z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := MustParse(tt.spec)
			at := utc(tt.after)
			for i, w := range tt.want {
				got := s.Next(at)
				if !got.Equal(utc(w)) {
					t.Fatalf("occurrence %d: Next(%s) = %s, want %s", i, at.Format(time.RFC3339), got.UTC().Format(time.RFC3339), w)
				}
				at = got
			}
		})
	}
}

// TestNextSpecCases are the two checks DESIGN §4.5 names, spelled out.
func TestNextSpecCases(t *testing.T) {
	t.Parallel()
	s := MustParse("every day at 01:30 in Europe/London")
	if got := s.Next(utc("2026-03-29T00:00:00Z")); !got.Equal(utc("2026-03-29T01:00:00Z")) {
		t.Errorf("2026-03-29: runs at %s, want 2026-03-29T01:00Z", got.UTC())
	}
	if got := s.Next(utc("2026-10-25T00:00:00Z")); !got.Equal(utc("2026-10-25T00:30:00Z")) {
		t.Errorf("2026-10-25: first run at %s, want 2026-10-25T00:30Z", got.UTC())
	}
	// Exactly one run on 2026-10-25.
	runs := 0
	for at := utc("2026-10-24T23:59:00Z"); ; {
		at = s.Next(at)
		if !at.Before(utc("2026-10-26T00:00:00Z")) {
			break
		}
		runs++
	}
	if runs != 1 {
		t.Errorf("2026-10-25 has %d runs, want 1", runs)
	}
}

func TestIntervalDeterministicAcrossRestarts(t *testing.T) {
	t.Parallel()
	s := MustParse("every 15 minutes")
	// Two "processes" starting at different times agree on the grid.
	a := s.Next(utc("2026-05-04T10:01:00Z"))
	b := s.Next(utc("2026-05-04T10:13:59Z"))
	if !a.Equal(b) || !a.Equal(utc("2026-05-04T10:15:00Z")) {
		t.Errorf("Next = %s and %s, want both 10:15Z", a, b)
	}
}

func TestNextAfterSkipsMissedRuns(t *testing.T) {
	t.Parallel()
	s := MustParse("every hour")
	last := utc("2026-05-04T10:00:00Z")
	tests := []struct {
		name     string
		now      time.Time
		lastRun  time.Time
		wantNext string
	}{
		{"on time", utc("2026-05-04T10:00:05Z"), last, "2026-05-04T11:00:00Z"},
		{"down for 5 hours: no backfill", utc("2026-05-04T15:20:00Z"), last, "2026-05-04T16:00:00Z"},
		{"never ran", utc("2026-05-04T15:20:00Z"), time.Time{}, "2026-05-04T16:00:00Z"},
		{"clock behind the last run", utc("2026-05-04T09:59:00Z"), last, "2026-05-04T11:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := NextAfter(s, tt.lastRun, tt.now); !got.Equal(utc(tt.wantNext)) {
				t.Errorf("NextAfter = %s, want %s", got.UTC(), tt.wantNext)
			}
		})
	}
}

func TestOccurrenceKey(t *testing.T) {
	t.Parallel()
	london, _ := time.LoadLocation("Europe/London")
	at := utc("2026-03-29T01:00:00Z")
	tests := []struct {
		name string
		at   time.Time
		want string
	}{
		{"UTC", at, "task:digest:2026-03-29T01:00:00Z"},
		{"same instant in another zone", at.In(london), "task:digest:2026-03-29T01:00:00Z"},
		{"sub-second kept", at.Add(time.Millisecond), "task:digest:2026-03-29T01:00:00.001Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := OccurrenceKey("digest", tt.at); got != tt.want {
				t.Errorf("OccurrenceKey = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSpecWithoutParse(t *testing.T) {
	t.Parallel()
	s := &Spec{Kind: KindDaily, Hour: 1, Minute: 30, Zone: "Europe/London"}
	if got := s.Next(utc("2026-03-29T00:00:00Z")); !got.Equal(utc("2026-03-29T01:00:00Z")) {
		t.Errorf("Next = %s", got)
	}
	c := &Spec{Kind: KindCron, Cron: "0 9 * * *", Zone: "Europe/London"}
	if got := c.Next(utc("2026-01-10T12:00:00Z")); !got.Equal(utc("2026-01-11T09:00:00Z")) {
		t.Errorf("cron Next = %s", got)
	}
}

func TestNextInZoneOfSpec(t *testing.T) {
	t.Parallel()
	got := MustParse("every day at 09:00 in Asia/Tokyo").Next(utc("2026-05-04T00:00:00Z"))
	if name, _ := got.Zone(); name != "JST" || got.Hour() != 9 {
		t.Errorf("Next = %s, want 09:00 JST", got)
	}
}

// TestDailyOneRunPerDay walks a year of daily runs in zones with unusual
// transitions and checks that each local day has one run, at the wall
// time asked for or, when that time does not exist, at the end of the gap.
func TestDailyOneRunPerDay(t *testing.T) {
	t.Parallel()
	tests := []struct {
		zone string
		year int
	}{
		{"Europe/London", 2026},
		{"America/New_York", 2026},
		{"Australia/Lord_Howe", 2026}, // 30-minute shifts
		{"America/Sao_Paulo", 2018},   // clocks went forward at midnight
		{"Pacific/Apia", 2011},        // 2011-12-30 did not happen
		{"Asia/Tehran", 2022},
	}
	clocks := []string{"00:00", "00:30", "01:30", "02:00", "02:30", "12:00", "23:59"}
	for _, tt := range tests {
		for _, hm := range clocks {
			t.Run(tt.zone+" "+hm, func(t *testing.T) {
				t.Parallel()
				s := MustParse("every day at " + hm + " in " + tt.zone)
				loc := s.Location()
				at := time.Date(tt.year, 1, 1, 0, 0, 0, 0, loc).Add(-time.Second)
				end := time.Date(tt.year+1, 1, 1, 0, 0, 0, 0, loc)
				perDay := map[string]int{}
				for {
					next := s.Next(at)
					if !next.After(at) || next.Sub(at) > 49*time.Hour {
						t.Fatalf("Next(%s) = %s", at, next)
					}
					at = next
					if !at.Before(end) {
						break
					}
					local := at.In(loc)
					if got := local.Format("15:04"); got != hm {
						// Only allowed at the end of a gap that swallowed hm.
						prev := at.Add(-time.Nanosecond).In(loc)
						_, before := prev.Zone()
						_, after := local.Zone()
						if after <= before {
							t.Fatalf("run at %s (%s local), not %s and not the end of a gap", at.UTC(), got, hm)
						}
						// The run stands for the day whose hm the gap
						// swallowed: after the gap's start in wall time.
						// (Apia skipped all of 2011-12-30: that day's run
						// is at the gap's end, 2011-12-31 00:00.)
						h, m := s.Hour, s.Minute
						wall := time.Date(prev.Year(), prev.Month(), prev.Day(), h, m, 0, 0, time.UTC)
						if wall.Before(time.Date(prev.Year(), prev.Month(), prev.Day(), prev.Hour(), prev.Minute(), prev.Second(), prev.Nanosecond(), time.UTC)) {
							wall = wall.AddDate(0, 0, 1)
						}
						perDay[wall.Format(time.DateOnly)]++
						continue
					}
					perDay[local.Format(time.DateOnly)]++
				}
				for day, n := range perDay {
					if n != 1 {
						t.Errorf("%s has %d runs", day, n)
					}
				}
				if len(perDay) < 364 {
					t.Errorf("%d days with a run in %d", len(perDay), tt.year)
				}
			})
		}
	}
}
