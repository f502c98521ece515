package milter

// Every milter session is a new goroutine (go-milter starts one per
// connection, and Postfix opens a connection per SMTP session), and it
// starts on a small stack. Checking, signing and logging a message go
// deeper than 16 KiB, so the runtime grew the stack of every session three
// or four times on the way, each time copying and walking the frames
// already on it: 2-3 % of milterd's CPU per signed message (pprof:
// runtime.newstack under EndOfHeaders, End and logDecision).
// growSessionStack, called where go-milter creates the session's filter,
// grows it once, to 32 KiB, while the stack is still a few frames deep.

// sessionFrame is the frame growSessionStack takes: with what is already on
// the stack, more than 16 KiB, so the runtime doubles the stack to 32 KiB in
// one step.
const sessionFrame = 16 << 10

// stackIndex, never written, keeps the compiler from removing the frame.
var stackIndex int

//go:noinline
func growSessionStack() byte {
	var frame [sessionFrame]byte
	return frame[stackIndex]
}
