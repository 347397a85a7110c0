module github.com/spigot-llm/spigot

go 1.26
