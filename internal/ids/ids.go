// Package ids makes the identifiers agentflow generates: instances,
// schedules, fibers, submissions, nodes and connections. One generator, so
// every id has the same alphabet and the same strength.
package ids

import (
	"crypto/rand"
	"encoding/base32"
	"time"
)

// encoding is lowercase Crockford-style base32 (no i, l, o, u): ids read
// well, sort as their bytes do, and fit in URLs and file names as they are.
var encoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// Random returns 24 characters of 120 random bits.
func Random() string {
	var b [15]byte
	_, _ = rand.Read(b[:]) // never fails on supported platforms
	return encoding.EncodeToString(b[:])
}

// Sortable returns 24 characters: now in milliseconds (48 bits) followed
// by 72 random bits. Ids made later sort later, so rows inserted by id go
// to the end of their index and those being worked on share few pages.
func Sortable(now time.Time) string {
	var b [15]byte
	ms := uint64(now.UnixMilli())
	for i := range 6 {
		b[i] = byte(ms >> (8 * (5 - i)))
	}
	_, _ = rand.Read(b[6:]) // never fails on supported platforms
	return encoding.EncodeToString(b[:])
}
