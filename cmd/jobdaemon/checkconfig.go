package main

import (
	"fmt"
	"io"

	"github.com/BurntSushi/toml"
)

const checkConfigHelp = `
Loads the config file as "run" would: every unknown key, out-of-range
value, missing user or group, and a command that does not exist or cannot
be executed is reported with the file, line and key. On success it prints
the settings in effect, defaults included and paths made absolute.

Exits 0 when the file is valid, 78 when it is not.`

func cmdCheckConfig(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check-config", "--config FILE", checkConfigHelp, stderr)
	cfgPath := configFlag(fs)
	quiet := fs.Bool("quiet", false, "print nothing when the file is valid")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	if *quiet {
		return exitOK
	}
	fmt.Fprintf(stdout, "# %s is valid; the settings in effect:\n", *cfgPath)
	if err := toml.NewEncoder(stdout).Encode(cfg); err != nil {
		fmt.Fprintf(stderr, "jobdaemon: print config: %v\n", err)
		return exitSoftware
	}
	return exitOK
}
