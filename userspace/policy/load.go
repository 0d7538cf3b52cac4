package policy

import (
	"path/filepath"
)

// LoadFile reads, parses and validates a policy file and the CIDR list files it
// names (paths relative to the policy file's directory). Validation errors come
// back as Errors. The policy and its list files must be regular files within
// MaxPolicyBytes and MaxListBytes.
func LoadFile(path string) (*Policy, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, ListReader(filepath.Dir(path)))
}
