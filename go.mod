module github.com/myhoard/myhoard

go 1.26.8

require pgregory.net/rapid v1.2.0
