//go:build race

package crashtest_test

// raceEnabled scales the tests down: the race detector slows the pure-Go
// SQLite driver by an order of magnitude.
const raceEnabled = true
