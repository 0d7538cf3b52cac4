package policy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/apiguard/apiguard/loader"
)

// LoadFile reads, parses and validates a policy file and the CIDR list files it
// names (paths relative to the policy file's directory). Validation errors come
// back as Errors.
func LoadFile(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	dir := filepath.Dir(path)
	return Parse(path, data, func(p string) ([]byte, error) {
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		return os.ReadFile(p)
	})
}

// Parse reads a policy from data; name is used in error messages and readFile
// resolves the list files the policy names.
func Parse(name string, data []byte, readFile func(path string) ([]byte, error)) (*Policy, error) {
	return nil, errors.New("not implemented yet")
}

// Compile turns the policy into the loader's plain values. prev is the policy
// in force (may be nil): services that keep their name keep their loader ID; new
// ones take the lowest free ID. With prev == nil, IDs follow sorted service
// names, so the same file always compiles the same.
func (p *Policy) Compile(prev *loader.Policy) (*loader.Policy, error) {
	return nil, errors.New("not implemented yet")
}

// Diff lists human-readable changes from old to new, one per line, such as
// "+ deny 203.0.113.0/24" or "~ service https: client packets 100/s -> 200/s".
// It is empty when the two compile to the same thing.
func Diff(old, new *Policy) []string {
	return nil
}
