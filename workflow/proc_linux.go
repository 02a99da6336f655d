package workflow

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// processIdentity identifies a live process beyond its pid, as
// "<pid>:<start time in clock ticks since boot>", so that a process that
// reused a dead one's pid (PID 1 in a restarted container) is told apart.
// It returns "" when no process has that pid.
func processIdentity(pid int) string {
	if pid <= 0 {
		return ""
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name (field 2) is parenthesized and may hold spaces; the
	// start time is field 22, the 20th after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ""
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 20 {
		return ""
	}
	return strconv.Itoa(pid) + ":" + string(f[19])
}
