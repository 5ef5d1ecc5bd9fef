package main

import (
	"github.com/myhoard/myhoard/api"
	"github.com/myhoard/myhoard/node"
)

// The controller serves the API directly; a drifted method signature
// fails the build here rather than removing routes at run time.
var _ api.Node = (*node.Controller)(nil)
