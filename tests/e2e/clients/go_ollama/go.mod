module agentbrake/e2e/go_ollama

go 1.19
