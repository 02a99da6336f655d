package ids

import (
	"regexp"
	"slices"
	"testing"
	"time"
)

var shape = regexp.MustCompile(`^[0-9a-hjkmnp-tv-z]{24}$`)

func TestShapeAndUniqueness(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for i := range 10_000 {
		for _, id := range []string{Random(), Sortable(time.Now())} {
			if !shape.MatchString(id) {
				t.Fatalf("id %q does not have the shape %s", id, shape)
			}
			if seen[id] {
				t.Fatalf("id %q made twice (after %d)", id, i)
			}
			seen[id] = true
		}
	}
}

func TestSortableSortsByTime(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	var got []string
	for i := range 100 {
		got = append(got, Sortable(t0.Add(time.Duration(i)*time.Millisecond)))
	}
	if !slices.IsSorted(got) {
		t.Fatalf("ids made a millisecond apart do not sort by time: %v", got)
	}
}
