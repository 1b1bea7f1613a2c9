from crawlsched.cli import main

main()
