module github.com/moemesh/moemesh/tools/blasref

go 1.26
