package main

import (
	"fmt"

	"sigs.k8s.io/yaml"
)

// promConfig is the part of a Prometheus configuration the check reads.
type promConfig struct {
	ScrapeConfigs []struct {
		JobName       string `json:"job_name"`
		StaticConfigs []struct {
			Targets []string `json:"targets"`
		} `json:"static_configs"`
	} `json:"scrape_configs"`
}

// promTargets lists the static targets of a Prometheus configuration.
func promTargets(file string) (map[string]bool, error) {
	b, err := readFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var c promConfig
	if err := yaml.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	targets := map[string]bool{}
	for _, sc := range c.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, t := range st.Targets {
				targets[t] = true
			}
		}
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("%s: no scrape targets", file)
	}
	return targets, nil
}
