from rqmaint.cli.main import main

main()
