// The etcd server binary: go.etcd.io/etcd/server/v3/etcdmain behind a main function, as etcd's
// root module does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
