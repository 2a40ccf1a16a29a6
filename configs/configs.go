// Package configs holds specd's default configuration file, specd.yaml:
// every key of `specd serve` with its default, documented. `make run`
// serves with it; cmd/specd's tests check that it loads and that it names
// every key the daemon knows.
package configs

import _ "embed"

// Default is the text of specd.yaml.
//
//go:embed specd.yaml
var Default []byte
