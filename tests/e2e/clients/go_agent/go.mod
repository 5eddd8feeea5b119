module agentbrake.test/go_agent

go 1.19
