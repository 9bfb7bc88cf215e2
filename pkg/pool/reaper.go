package pool

import (
	"os"
	"os/signal"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// reapLoop is the one goroutine that reaps the pool's children. SIGCHLD is
// only a hint (several exits may share one signal), so each wake-up reaps
// every exited child of ours it can find.
func (p *Pool) reapLoop() {
	defer p.wg.Done()
	sigs := make(chan os.Signal, 1)
	// Never signal.Ignore(SIGCHLD): with SIGCHLD ignored the kernel reaps
	// children itself and every wait fails with ECHILD.
	signal.Notify(sigs, syscall.SIGCHLD)
	defer signal.Stop(sigs)
	for {
		select {
		case <-sigs:
		case <-p.poke:
		case <-p.quit:
			return
		}
		p.reapExited()
	}
}

func (p *Pool) pokeReaper() {
	select {
	case p.poke <- struct{}{}:
	default:
	}
}

// reapExited reaps every exited child of the pool. It peeks at the first
// exited child of the process without reaping it; if it is ours, it reaps
// it and peeks again, at constant cost per exit. If it belongs to someone
// else (an exec.Cmd elsewhere in the program, whose Wait will reap it), our
// own exited children may hide behind it, so it checks each of them.
func (p *Pool) reapExited() {
	for {
		pid := peekExited(unix.P_ALL, 0)
		if pid == 0 {
			return
		}
		p.mu.Lock()
		c := p.byPid[pid]
		if c != nil {
			// Out of byPid before the pid can be reused by a new process.
			delete(p.byPid, pid)
		}
		p.mu.Unlock()
		if c == nil {
			p.reapOwn()
			return
		}
		c.reap()
	}
}

// reapOwn checks each of the pool's children; it runs only when a foreign
// zombie hides the others.
func (p *Pool) reapOwn() {
	p.mu.Lock()
	pids := make([]int, 0, len(p.byPid))
	for pid := range p.byPid {
		pids = append(pids, pid)
	}
	p.mu.Unlock()
	for _, pid := range pids {
		if peekExited(unix.P_PID, pid) != pid {
			continue
		}
		p.mu.Lock()
		c := p.byPid[pid]
		delete(p.byPid, pid)
		p.mu.Unlock()
		if c != nil {
			c.reap()
		}
	}
}

// siginfoChild is the part of siginfo_t that waitid fills for a child, laid
// out as the kernel does on 64-bit Linux; it has the size of unix.Siginfo.
type siginfoChild struct {
	Signo, Errno, Code int32
	_                  int32
	Pid                int32
	UID                uint32
	Status             int32
	_                  [100]byte
}

// A compile-time check that siginfoChild and unix.Siginfo have one size.
var (
	_ [unsafe.Sizeof(unix.Siginfo{}) - unsafe.Sizeof(siginfoChild{})]byte
	_ [unsafe.Sizeof(siginfoChild{}) - unsafe.Sizeof(unix.Siginfo{})]byte
)

// peekExited returns the pid of an exited child (of any child when which is
// P_ALL, of pid when it is P_PID) without reaping it, or 0 if there is none.
func peekExited(which, pid int) int {
	var si siginfoChild
	for {
		err := unix.Waitid(which, pid, (*unix.Siginfo)(unsafe.Pointer(&si)),
			unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0 // ECHILD: no children at all
		}
		return int(si.Pid)
	}
}
