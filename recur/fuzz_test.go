package recur

import (
	"testing"
	"time"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"every minute", "every 5 minutes", "every 1 hour", "every 2 hours", "every 25:00",
		"every day at 01:30 in Europe/London", "every weekday at 09:00 in America/New_York",
		"every week on mon,wed at 09:00", "every week on sun, sat at 23:59 in Pacific/Apia",
		"every week on mon,mon at 09:00", "every day at 01:30 in", "every 5 minutes in UTC",
		"*/5 * * * *", "CRON_TZ=Europe/London 30 1 * * *", "0 0 29 2 *", "@daily", "",
		"every day at 02:30 in Australia/Lord_Howe", "every day at 00:00 in America/Sao_Paulo",
	} {
		f.Add(s, int64(1774744200)) // 2026-03-29T00:30Z
	}
	f.Fuzz(func(t *testing.T, text string, unix int64) {
		s, err := Parse(text)
		if err != nil {
			if s != nil {
				t.Fatalf("Parse(%q) returned a spec and an error", text)
			}
			return
		}
		canon := s.String()
		back, err := Parse(canon)
		if err != nil {
			t.Fatalf("Parse(%q) ok, but its String() %q does not parse: %v", text, canon, err)
		}
		if !back.Equal(s) {
			t.Fatalf("Parse(%q) = %+v, String() %q parses to %+v", text, s, canon, back)
		}
		if back.String() != canon {
			t.Fatalf("String() not stable: %q then %q", canon, back.String())
		}
		// Times from 1900 to 2200.
		const lo, span = -2208988800, 9467280000
		unix = lo + (unix%span+span)%span
		after := time.Unix(unix, 0)
		next := s.Next(after)
		if s.Kind == KindCron && next.IsZero() {
			return
		}
		if !next.After(after) {
			t.Fatalf("%q: Next(%s) = %s, not after it", canon, after.UTC(), next.UTC())
		}
		if s.Kind != KindCron && next.Sub(after) > 8*24*time.Hour {
			t.Fatalf("%q: Next(%s) = %s, more than 8 days later", canon, after.UTC(), next.UTC())
		}
	})
}
