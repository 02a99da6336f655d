package childproc

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal makes the kernel kill the child when the parent
// dies, so a crashed or interrupted test leaves no child running.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
