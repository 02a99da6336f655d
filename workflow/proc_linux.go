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
// It returns "" when no live process has that pid: none has, or it is a
// zombie (Z) or dead (X), a process that has exited and whose parent has
// not waited for it yet. A process killed with kill -9 stays a zombie
// until then, typically while a shell restarts the command it killed; it
// runs no code and holds no locks or connections, so its node is dead.
func processIdentity(pid int) string {
	if pid <= 0 {
		return ""
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name (field 2) is parenthesized and may hold spaces; the
	// state is field 3, the first after it, and the start time field 22,
	// the 20th.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ""
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 20 {
		return ""
	}
	if state := string(f[0]); state == "Z" || state == "X" {
		return ""
	}
	return strconv.Itoa(pid) + ":" + string(f[19])
}
