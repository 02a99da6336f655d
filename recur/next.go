package recur

import "time"

// Next is the first occurrence strictly after after, in the schedule's
// zone (UTC for intervals). A cron expression with no occurrence within
// go-cron's search horizon gives the zero time; the other kinds always
// have one within MaxInterval plus a daylight-saving shift.
func (s *Spec) Next(after time.Time) time.Time {
	switch s.Kind {
	case KindInterval:
		return s.nextInterval(after)
	case KindCron:
		sched := s.cron
		if sched == nil { // a Spec not made by Parse
			p, err := Parse(s.String())
			if err != nil {
				return time.Time{}
			}
			sched = p.cron
		}
		return sched.Next(after).In(s.Location())
	case KindDaily, KindWeekdays, KindWeekly:
		return s.nextCalendar(after)
	}
	return time.Time{}
}

// nextInterval is the first multiple of the interval since the Unix epoch
// strictly after after.
func (s *Spec) nextInterval(after time.Time) time.Time {
	step := int64(s.Interval / time.Second)
	if step <= 0 {
		return time.Time{}
	}
	sec := after.Unix()
	q := sec / step
	if sec%step < 0 { // floor division for times before 1970
		q--
	}
	return time.Unix((q+1)*step, 0).UTC()
}

// runsOn reports whether a calendar schedule has an occurrence on a day.
func (s *Spec) runsOn(d time.Weekday) bool {
	switch s.Kind {
	case KindDaily:
		return true
	case KindWeekdays:
		return d != time.Saturday && d != time.Sunday
	case KindWeekly:
		for _, w := range s.Days {
			if w == d {
				return true
			}
		}
	}
	return false
}

// nextCalendar walks the days from the one before after's date in the
// schedule's zone (a gap can move that day's run later) and returns the
// first occurrence strictly after after. Each day's instant is at least the
// previous day's, so the first one found is the earliest.
func (s *Spec) nextCalendar(after time.Time) time.Time {
	loc := s.Location()
	y, m, d := after.In(loc).Date()
	for i := -1; i <= 16; i++ {
		day := time.Date(y, m, d+i, 12, 0, 0, 0, time.UTC) // calendar arithmetic only
		if !s.runsOn(day.Weekday()) {
			continue
		}
		t := resolve(day.Year(), day.Month(), day.Day(), s.Hour, s.Minute, loc)
		if t.After(after) {
			return t
		}
	}
	return time.Time{} // unreachable for a valid spec
}

// resolve is the one instant a wall-clock time on a date stands for in loc:
//   - when the wall time exists once, that instant;
//   - when it exists twice (clocks went back), the earlier one;
//   - when it does not exist (clocks went forward over it), the end of the
//     gap: the first instant whose wall time is later than it.
//
// time.Date leaves the choice in both cases unspecified, so the zone's
// periods around the date are walked explicitly with ZoneBounds.
func resolve(year int, month time.Month, day, hour, minute int, loc *time.Location) time.Time {
	naive := time.Date(year, month, day, hour, minute, 0, 0, time.UTC).Unix()
	// Offsets are within ±26h of UTC, historical local mean times included.
	const window = 26 * 3600
	var (
		best, gap       int64
		found, foundGap bool
	)
	t := time.Unix(naive-window, 0).In(loc)
	for range 64 {
		_, off := t.Zone()
		if cand := naive - int64(off); !found || cand < best {
			if _, o := time.Unix(cand, 0).In(loc).Zone(); o == off {
				best, found = cand, true
			}
		}
		_, end := t.ZoneBounds()
		if end.IsZero() || end.Unix() > naive+window {
			break
		}
		e := end.Unix()
		_, offAfter := end.In(loc).Zone()
		// Wall times in [e+off, e+offAfter) do not exist.
		if e+int64(off) <= naive && naive < e+int64(offAfter) && !foundGap {
			gap, foundGap = e, true
		}
		t = end.In(loc)
	}
	switch {
	case found:
		return time.Unix(best, 0).In(loc)
	case foundGap:
		return time.Unix(gap, 0).In(loc)
	}
	return time.Date(year, month, day, hour, minute, 0, 0, loc)
}
