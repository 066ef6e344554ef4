"""The BCC runtime layer every command uses: privileges, headers, tracefs, loading."""
