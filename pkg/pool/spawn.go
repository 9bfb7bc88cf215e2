package pool

import (
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// The spawner is the one OS thread that forks every child of every pool in
// the process. Pdeathsig is delivered when the thread that forked the child
// exits, not when the process does; a goroutine locked to its thread for
// the life of the process makes "the forking thread is gone" mean "the
// daemon is gone". Forking from whatever thread the caller runs on is not
// enough: Go destroys a thread when a goroutine locked to it exits, and any
// goroutine (in a library that enters a network namespace, say) may lock
// itself to the very thread a child was forked from, and exit. It costs
// about a tenth of the spawn rate (a hand-off to this thread per fork).
// It is process-wide because the thread it pins is.
var (
	spawnOnce sync.Once
	spawnReqs chan func()
)

// onSpawner runs f on the spawner thread and returns when f has returned.
// For a caller on the pool's pinned thread (PinSpawner), f runs at once,
// on the caller's thread.
func (p *Pool) onSpawner(f func()) {
	if tid := p.pinned.Load(); tid != 0 && int32(unix.Gettid()) == tid {
		beforeFork()
		f()
		return
	}
	onSpawner(f)
}

// PinSpawner makes the calling goroutine's thread fork the children that
// this goroutine starts in the pool, without the hand-off of each fork to
// the spawner thread and back (two wake-ups of a thread per child). The
// caller must have locked itself to its thread with runtime.LockOSThread,
// and must stay locked until the unpin function it returns has been
// called, which it may call only once every child it started has been
// reaped: a child dies with the thread that forked it (Pdeathsig), and
// the thread of a locked goroutine can only end when the goroutine does.
// Children started from other goroutines still go through the spawner
// thread. Only one thread is pinned at a time; a second PinSpawner
// replaces the first.
func (p *Pool) PinSpawner() (unpin func()) {
	noInheritedCaps() // as on the spawner thread: children inherit its sets
	tid := int32(unix.Gettid())
	p.pinned.Store(tid)
	return func() { p.pinned.CompareAndSwap(tid, 0) }
}

// onSpawner runs f on the spawner thread and returns when f has returned.
func onSpawner(f func()) {
	spawnOnce.Do(func() {
		spawnReqs = make(chan func())
		ready := make(chan struct{})
		go spawnLoop(ready)
		<-ready
	})
	done := make(chan struct{})
	spawnReqs <- func() {
		f()
		close(done)
	}
	<-done
}

func spawnLoop(ready chan<- struct{}) {
	// Never unlocked, and the goroutine never returns: the thread lives as
	// long as the process.
	runtime.LockOSThread()
	noInheritedCaps()
	close(ready)
	for f := range spawnReqs {
		beforeFork()
		f()
	}
}

// beforeFork runs on a forking thread before each fork. Descriptors that
// reached the daemon without close-on-exec (from its own parent, or from C
// code) would leak into every job. Go opens its own with O_CLOEXEC, and
// ForkExec dup2s what it passes on purpose, so marking everything above
// stderr is safe. One syscall, so it is done before each fork rather than
// once: a descriptor may arrive at any time (socket activation, a library).
func beforeFork() {
	_ = unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
}
