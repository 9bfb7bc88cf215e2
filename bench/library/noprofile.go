//go:build !benchprofile

package main

import "errors"

// startProfile fails: see profile.go.
func startProfile(string) (func(), error) {
	return nil, errors.New("-cpuprofile needs a build with -tags benchprofile")
}
