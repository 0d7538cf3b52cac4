package trafgen

import "github.com/cilium/ebpf"

// LoadEdge and EdgeRun let the tests run the edge's program with prog.Run.
var LoadEdge = loadEdge

func EdgeRun(e *Edge, frame []byte) (uint32, error) {
	return e.objs.Prog.Run(&ebpf.RunOptions{Data: frame, Repeat: 1})
}
