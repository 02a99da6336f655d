package recur_test

import (
	"fmt"
	"time"

	"agentflow/recur"
)

// Parsing a schedule and listing its next runs: a daily 01:30 in
// Europe/London runs once a day, at 01:00Z on the day the clocks go
// forward (01:30 does not exist that night).
func ExampleParse() {
	spec, err := recur.Parse("every day at 01:30 in Europe/London")
	if err != nil {
		panic(err)
	}
	fmt.Println(spec.Kind, spec)
	t := time.Date(2026, 3, 27, 12, 0, 0, 0, time.UTC)
	for range 3 {
		t = spec.Next(t)
		fmt.Println(t.UTC().Format(time.RFC3339), recur.OccurrenceKey("digest", t))
	}

	_, err = recur.Parse("every 5 minute")
	fmt.Println(err)
	// Output:
	// daily every day at 01:30 in Europe/London
	// 2026-03-28T01:30:00Z task:digest:2026-03-28T01:30:00Z
	// 2026-03-29T01:00:00Z task:digest:2026-03-29T01:00:00Z
	// 2026-03-30T00:30:00Z task:digest:2026-03-30T00:30:00Z
	// recur: schedule "every 5 minute": "5 minute": a number other than 1 takes the plural, write `every 5 minutes`
}
